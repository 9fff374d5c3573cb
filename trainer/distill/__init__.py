"""Making the training data: composed requests, the teacher's answers, copy augmentation, judging and relabelling, the second round's rollout."""
