"""The stage tests' tiny params: a few tasks of cosmixture-shot50, a few iterations."""

TINY = [
    "algo.steps=2",
    "algo.maml.steps=null",
    "algo.mamlpp.steps=null",
    "train.iterations=4",
    "train.val_every=2",
    "train.meta_batch=2",
    "eval.tasks=3",
    "data.cosmixture.functions={train:6,val:3,test:3}",
    "~pipeline.benchmarks.cosmixture-shot50.algo",  # its tuned step sizes: the top level's here
]
