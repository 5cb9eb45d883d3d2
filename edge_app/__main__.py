from edge_foct.edge_app.cli import main

main()
