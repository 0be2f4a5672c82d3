"""chat.assigned, chat.message, chat.transferred and chat.ended (registered with the intake)."""
