"""Processing runs: stages and their states, file rules, run files, run claims, run export."""
