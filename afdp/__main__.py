from afdp.cli import main

main()
