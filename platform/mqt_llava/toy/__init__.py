"""The toy world the tiny preset trains and is judged on: a seeded scene generator (world), its
corpus in LLaVA's formats (corpus), benchmark files in the official formats (benchmark_files),
held-out questions by kind (heldout), the tiny base models made from it (base_models) and the
quickstart's steps (quickstart). The production packages (data, train, eval, serve) know nothing of it.
"""
