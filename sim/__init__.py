"""Stand-ins for what surrounds the IPP (survey generator, reference processor, PSPS)."""
