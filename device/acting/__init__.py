"""What a citizen sees and hears: spoken prompts and the gate relay with its lights."""
