"""call.abandoned: record the call for the ticket job (registered with the intake)."""
