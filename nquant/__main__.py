from nquant.interfaces.cli import main

main()
