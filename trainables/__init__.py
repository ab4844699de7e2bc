"""Safety alignment by SFT on Ray Train (the paper's stage 2), and the tiny LRM's stage 1."""
