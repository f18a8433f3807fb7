"""Getting an approved version into production: rollout state, the judge's rules, rollout actions, the exactly-once
promotion, rollout statistics.
"""
