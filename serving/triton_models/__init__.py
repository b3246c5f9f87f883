"""Sources of the repository's Python-backend models: the builder copies each one to
`<model>/1/model.py` (serving/repository.py). They share serving/backend.py."""
