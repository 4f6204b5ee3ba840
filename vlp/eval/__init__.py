"""Evaluation: the official VQA accuracy, answer normalisation and vocabulary,
leaderboard submission files, caption grounding and ToyWorld caption truth."""
