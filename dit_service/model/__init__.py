"""Model modules whose parameter names equal the released ACE-Step 1.5 checkpoint keys."""
