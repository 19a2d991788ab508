"""The toy world the tiny preset trains and is judged on: a seeded scene generator (world), its
corpus in LLaVA's formats (corpus), benchmark files in the official formats (benchmark_files),
held-out questions by kind (heldout) and the tiny base models made from it (base_models). The
production packages (data, train, eval, serve) know nothing of it; the quickstart (mqt_llava.recipes) uses it.
"""
