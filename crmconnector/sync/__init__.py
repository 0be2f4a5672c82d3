"""Everything that writes to the CRM after the callback's transaction: outbox, worker, chat logs, jobs."""
