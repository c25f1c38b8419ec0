"""Layer 5, steps 6-8: measurements: quality through the server (client.py), perf_analyzer levels (run_tests.sh),
engine benchmarks, the serving-settings search (tune), the serving and quantization peers, profiling, soak.
A new measurement goes here."""
