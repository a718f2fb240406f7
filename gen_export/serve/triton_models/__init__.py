"""Python-backend model files copied into Triton repositories (each runs inside Triton's python stub)."""
