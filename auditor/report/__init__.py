"""The report model every renderer reads, and the renderers (JSON, HTML, terminal)."""
