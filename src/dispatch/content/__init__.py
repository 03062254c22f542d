"""What an issue says: articles in plain text and Markdown, their markup, and their language."""
