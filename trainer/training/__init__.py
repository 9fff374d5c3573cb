"""Training the policy: configuration, dataset, tokenizer, model presets, the loop, checkpoints."""
