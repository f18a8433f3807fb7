"""The rollout judge Lambda: one judge pass over every model on a schedule (flywheel/judging.py)."""
