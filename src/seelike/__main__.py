"""``python -m seelike`` (and ``torchrun -m seelike``) runs the command line."""

from seelike.cli import app

app(prog_name="seelike")
