"""Code the tests share (imported as `helpers.<module>`: tests/ is on sys.path, as for `fakes` and `conftest`).

- checkpoints: a Trainer-shaped checkpoint folder on disk;
- html: a small DOM over html.parser, and the report's tables read from it;
- report: the reports built from the committed fixture results (tests/fixtures/results/);
- strict_json: a JSON parser that refuses NaN and Infinity, and a walk over a results folder;
- tiny_llama: a word-level tokenizer and a random tiny Llama;
- tiny_run: a tiny base model and data saved like the workflow's, and run settings for train_run;
- workflow: a copy of the workflow and the real snakemake CLI run on it.

Stand-ins for libraries and objects of the product live in tests/fakes/.
"""
