from nquant.cli import main

main()
