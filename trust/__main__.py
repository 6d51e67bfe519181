from trust.cli.console import console

console()
