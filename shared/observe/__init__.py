"""What operators watch: metrics, the loading summary, plots."""
