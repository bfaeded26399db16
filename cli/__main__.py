from denoise.cli.main import main

main()
