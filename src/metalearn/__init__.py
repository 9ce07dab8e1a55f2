"""metalearn: reproducible meta-learning (MAML, FOMAML, Reptile, iMAML, Adjoint MAML)."""
