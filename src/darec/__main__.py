from darec.cli import app

app(prog_name="darec")
