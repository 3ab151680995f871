"""autogrow: discover the depth of a convolutional network by growing it while it trains."""

__version__ = "0.1.0"
