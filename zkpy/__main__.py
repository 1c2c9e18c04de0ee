from zkpy.cli import main

main()
