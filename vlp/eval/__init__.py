"""Evaluation: the official VQA accuracy, answer normalisation and vocabulary, and
leaderboard submission files."""
