"""What production saw and what it should have said: captured predictions, delayed labels, live quality, labelled
batches, the feedback policy.
"""
