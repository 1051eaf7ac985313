"""Evaluating a trained model: test-view metrics, identity, videos and the web page; re-rendering test
frames with other expressions."""
