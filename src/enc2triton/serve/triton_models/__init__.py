"""Python-backend models. Each file is copied verbatim into the generated model repository as
`<model>/1/model.py`, so each is self-contained (no enc2triton imports) and reads its settings from
the model config's parameters, which repository.py writes from the one spec."""
