from hotload.cli import main

main()
