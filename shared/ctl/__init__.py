"""ippctl, the operators' command line, and the demo."""
