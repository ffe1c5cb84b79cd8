"""Training: one loop for training and fine-tuning (engine), per-epoch learning-rate schedules, Mixup, the losses
(cross-entropy, label smoothing, distillation) and many models in one pass (stacked)."""
