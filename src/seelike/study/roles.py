"""The roles a study's models play (plain data, cheap to import: ``seelike study --help`` lists them)."""

#: Every role a study model can play, with what it is (``seelike study --help`` lists these).
ROLES = {
    "vit": "CLS-token ViT, the reference of most comparisons",
    "vit_gap": "ViT trained with a global-average-pool classifier (RQ3: CLS vs GAP)",
    "resnet": "the CNN compared with the ViT",
    "mixer": "MLP-Mixer (RQ5)",
    "vit_seed1": "vit trained again with another seed (seed baselines)",
    "vit_noskip_early": "vit trained without the skips of block 1 (Fig 8)",
    "vit_noskip_mid": "vit trained without the skips of block 3 (Fig 8)",
    "vit_frac30": "vit trained on 30% of its data (RQ4)",
    "vit_frac10": "vit trained on 10% of its data (RQ4)",
    "vit_frac03": "vit trained on 3% of its data (RQ4)",
    "vit_large": "a larger ViT (RQ4, Fig 12-13)",
    "vit_large_frac10": "vit_large trained on 10% of its data",
    "vit_large_seed1": "vit_large trained again with another seed",
}
#: The roles every study needs.
CORE_ROLES = ("vit", "vit_gap", "resnet", "mixer")
