from looper_cli.cli import main

main()
