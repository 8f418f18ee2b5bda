"""featinv: what does a feature representation still know about the image?"""
__version__ = "0.1.0"
