"""The rollout judge Lambda: one judge pass over every model on a schedule (flywheel/jobs/judge_pass.py)."""
