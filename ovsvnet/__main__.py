from ovsvnet.cli import main

main()
