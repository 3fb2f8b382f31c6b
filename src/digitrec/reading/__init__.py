"""Reading digits: decoding, the ink map, printed lines of forms, lines, the recognizer and its results.

May import NumPy, Pillow, OpenCV, ONNX Runtime and digitrec's `data` and `models` modules; never Keras or
TensorFlow at import or when reading with ONNX Runtime (tests/test_layout.py checks it).
"""
