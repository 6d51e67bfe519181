from trust.console import console

console()
