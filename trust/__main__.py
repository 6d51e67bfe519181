from trust.cli import console

console()
