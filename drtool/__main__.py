from drtool.cli.app import main

main()
