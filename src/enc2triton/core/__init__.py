"""Layer 0: helpers every stage uses (paths and settings in spec, logs in io, command lines in cli, texts, tables,
metrics, the host, tool finding). They import nothing else from enc2triton."""
