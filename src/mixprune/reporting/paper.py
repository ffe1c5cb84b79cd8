"""The figures the paper reports (Li, 'Lightweight CNN Design Based on Mixup Data Augmentation and
Network Pruning'), kept apart from anything mixprune measures so reports can set them side by side.

Keys follow results.json's model names; None where the paper gives no figure.
"""

from __future__ import annotations

# Table 2 (accuracy %, test loss) and Table 3 (pruned accuracy, drop, "62.7%" compression).
TEST_ACCURACY = {"baseline": 88.34, "mixup": 90.42, "pruned": 86.91, "mixup_pruned": 89.75}
TEST_LOSS = {"baseline": 0.395, "mixup": 0.328, "pruned": None, "mixup_pruned": None}
ACCURACY_DROP = {"pruned": -1.43, "mixup_pruned": -0.67}  # points, pruned vs its dense parent
PARAM_REDUCTION_PCT = {"pruned": 62.7, "mixup_pruned": 62.7}
CONVERGENCE = {"baseline": "Fast convergence, slight oscillation in later stage",
               "mixup": "Smooth convergence, reduced overfitting"}
# Table 4: parameter count (x 10^4), inference time (ms, RTX 3060, batch not stated).
PARAMS_E4 = {"baseline": 43.5, "mixup": 43.5, "pruned": 16.1, "mixup_pruned": 16.1}
INFERENCE_MS = {"baseline": 119.3, "mixup": 120.7, "pruned": 65.8, "mixup_pruned": 66.3}

INCONSISTENCIES = (
    "Table 1 and Section 3.1 give ~44K parameters (44,426 exactly for this architecture), but Table 4 "
    "and the Conclusion say 435K -> 161K.",
    "Pruning 20% of conv and 30% of FC weights removes 13,002 of 44,190 weights: 31,424 of 44,426 "
    "parameters stay nonzero, a 29.3% reduction, not the 62.7% of Tables 3 and 4.",
    "Section 4.1 calls Model C 'structured pruning'; Sections 3.2 and 4.1 (later) say L1 unstructured, "
    "which is what the paper's own settings describe and what mixprune runs.",
    "161K parameters in 16-bit form are ~0.32 MB, not 0.17 MB; a 6.2 MB file (Conclusion) fits neither count.",
    "119 ms for one LeNet inference on an RTX 3060 is ~1,000x what such a network needs; unstructured "
    "masks do not change dense-kernel latency.",
    "'+2.84% over pruning alone' (Conclusion) is Pruned(B) - Pruned(A) = 89.75 - 86.91, i.e. Mixup's "
    "effect on pruned models, not the joint strategy's gain over pruning.",
    "The paper does not say how many epochs or at what LR pruned models are fine-tuned ('several epochs').",
)
