"""Training: rendered and real training data, augmentation, the loop, calibration, the line reader's.

May import everything else of digitrec, and Keras.
"""
