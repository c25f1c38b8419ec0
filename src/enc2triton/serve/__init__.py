"""Layer 4, steps 4-5: the Triton model repository (repository.py; the Python-backend models it copies are in
triton_models/), the server's start and stop (server.py, serve.sh), Triton's statistics, the setup check."""
