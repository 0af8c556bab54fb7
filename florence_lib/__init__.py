"""florence_lib: an open reproduction of the Florence vision foundation model recipe (Yuan et al., 2021).

Layers (a module imports only from its own layer or below):
    0 base        config, config_doc, registry, resources, runs, distributed
    1 data        data/ (world, loaders, shards, tokenizer, transforms, prompts)
    1 models      models/ (CoSwin, text encoder, UniCL) and losses/ (contrastive)
    2 curation    curation/ (FLD-style filters, dedup, label table, data cards)
    2 training    training/ (engine, checkpoints, schedules, gradient cache, pretraining)
    3 evaluation  evaluation/ (zero-shot, linear probe, fine-tune, few-shot, retrieval)
    4 faces       cli, commands/, launch/ (cluster plans, submitit), notebooks/, cluster/
"""

__version__ = "0.1.0"
