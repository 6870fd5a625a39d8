from specauf.train import main

main()
